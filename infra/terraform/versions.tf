terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60, < 6.0"
    }
  }

  # Configure a remote backend for real use, e.g.:
  # backend "s3" { bucket = "my-tf-state" key = "xcaliber/terraform.tfstate" region = "eu-central-1" }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project     = "xcaliber"
      Environment = var.environment
      ManagedBy   = "terraform"
    }
  }
}
