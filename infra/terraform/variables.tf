variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-central-1"
}

variable "environment" {
  description = "Deployment name, used in resource names (e.g. prod, staging)."
  type        = string
  default     = "prod"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.environment))
    error_message = "environment: lower-case letters, digits and dashes, 2 to 21 characters."
  }
}

variable "vpc_id" {
  description = "The VPC to deploy into (an existing network with private subnets and NAT)."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets in at least two availability zones: EKS nodes, RDS and ElastiCache."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "Give at least two private subnets (two availability zones)."
  }
}

variable "cluster_version" {
  description = "Kubernetes version of the EKS cluster."
  type        = string
  default     = "1.31"
}

variable "cluster_endpoint_public_access_cidrs" {
  description = "CIDRs allowed to reach the EKS API endpoint publicly (empty: private endpoint only)."
  type        = list(string)
  default     = []
}

variable "cpu_node_instance_types" {
  type    = list(string)
  default = ["m7i.xlarge"]
}

variable "cpu_node_count" {
  type    = object({ min = number, desired = number, max = number })
  default = { min = 2, desired = 3, max = 10 }
}

variable "gpu_node_instance_types" {
  type    = list(string)
  default = ["g6.xlarge"]
}

variable "gpu_node_max" {
  description = "Most GPU nodes (KEDA scales the GPU workers from 0; the cluster autoscaler adds nodes)."
  type        = number
  default     = 4
}

variable "db_instance_class" {
  type    = string
  default = "db.m7g.large"
}

variable "db_allocated_storage_gb" {
  type    = number
  default = 100
}

variable "db_engine_version" {
  type    = string
  default = "16.4"
}

variable "redis_node_type" {
  type    = string
  default = "cache.m7g.large"
}

variable "media_noncurrent_days" {
  description = "Days an overwritten or deleted object's previous version is kept (versioned bucket)."
  type        = number
  default     = 30
}

variable "k8s_namespace" {
  description = "Namespace of the X Caliber pods (infra/k8s)."
  type        = string
  default     = "xcaliber"
}

variable "k8s_service_account" {
  description = "Service account of the X Caliber pods; its IAM role reaches the media bucket."
  type        = string
  default     = "xcaliber"
}

variable "redis_auth_token" {
  description = "Redis AUTH token (16 to 128 printable characters); pass it from a secret store (TF_VAR_redis_auth_token)."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.redis_auth_token) >= 16 && length(var.redis_auth_token) <= 128
    error_message = "redis_auth_token must be 16 to 128 characters."
  }
}
