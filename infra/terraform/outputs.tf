output "media_bucket" {
  description = "XCALIBER_S3_BUCKET"
  value       = aws_s3_bucket.media.bucket
}

output "database_endpoint" {
  description = "Host:port for DATABASE_URL (postgres://xcaliber:<password>@<endpoint>/xcaliber?sslmode=require)."
  value       = aws_db_instance.main.endpoint
}

output "database_password_secret_arn" {
  description = "Secrets Manager secret holding the generated database password."
  value       = aws_db_instance.main.master_user_secret[0].secret_arn
}

output "redis_primary_endpoint" {
  description = "Host for REDIS_URL (rediss://:<auth token>@<host>:6379/0) and the KEDA trigger address."
  value       = aws_elasticache_replication_group.main.primary_endpoint_address
}

output "cluster_name" {
  value = aws_eks_cluster.main.name
}

output "app_role_arn" {
  description = "IAM role of the X Caliber pods (bound to the service account by EKS Pod Identity)."
  value       = aws_iam_role.app.arn
}
