# PostgreSQL (RDS) and Redis (ElastiCache) in the private subnets, reachable only from the cluster.

resource "aws_security_group" "database" {
  name_prefix = "xcaliber-${var.environment}-db-"
  description = "X Caliber PostgreSQL: from the EKS cluster only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "database_from_cluster" {
  security_group_id            = aws_security_group.database.id
  referenced_security_group_id = aws_eks_cluster.main.vpc_config[0].cluster_security_group_id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  description                  = "PostgreSQL from the cluster's nodes and pods"
}

resource "aws_db_subnet_group" "main" {
  name_prefix = "xcaliber-${var.environment}-"
  subnet_ids  = var.private_subnet_ids
}

resource "aws_db_parameter_group" "postgres" {
  name_prefix = "xcaliber-${var.environment}-pg16-"
  family      = "postgres16"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
}

resource "aws_db_instance" "main" {
  identifier_prefix               = "xcaliber-${var.environment}-"
  engine                          = "postgres"
  engine_version                  = var.db_engine_version
  instance_class                  = var.db_instance_class
  allocated_storage               = var.db_allocated_storage_gb
  max_allocated_storage           = var.db_allocated_storage_gb * 5
  storage_type                    = "gp3"
  storage_encrypted               = true
  db_name                         = "xcaliber"
  username                        = "xcaliber"
  manage_master_user_password     = true # generated and kept in Secrets Manager, never in state
  db_subnet_group_name            = aws_db_subnet_group.main.name
  vpc_security_group_ids          = [aws_security_group.database.id]
  parameter_group_name            = aws_db_parameter_group.postgres.name
  publicly_accessible             = false
  multi_az                        = true
  backup_retention_period         = 14
  deletion_protection             = true
  skip_final_snapshot             = false
  final_snapshot_identifier       = "xcaliber-${var.environment}-final"
  copy_tags_to_snapshot           = true
  auto_minor_version_upgrade      = true
  performance_insights_enabled    = true
  enabled_cloudwatch_logs_exports = ["postgresql"]
}

resource "aws_security_group" "redis" {
  name_prefix = "xcaliber-${var.environment}-redis-"
  description = "X Caliber Redis: from the EKS cluster only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "redis_from_cluster" {
  security_group_id            = aws_security_group.redis.id
  referenced_security_group_id = aws_eks_cluster.main.vpc_config[0].cluster_security_group_id
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  description                  = "Redis from the cluster's nodes and pods"
}

resource "aws_elasticache_subnet_group" "main" {
  name       = "xcaliber-${var.environment}"
  subnet_ids = var.private_subnet_ids
}

# Broker, channel layer and cache: REDIS_URL=rediss://:<auth token>@<primary endpoint>:6379/0
resource "aws_elasticache_replication_group" "main" {
  replication_group_id       = "xcaliber-${var.environment}"
  description                = "X Caliber broker, channel layer and cache"
  engine                     = "redis"
  engine_version             = "7.1"
  node_type                  = var.redis_node_type
  num_cache_clusters         = 2
  automatic_failover_enabled = true
  multi_az_enabled           = true
  port                       = 6379
  subnet_group_name          = aws_elasticache_subnet_group.main.name
  security_group_ids         = [aws_security_group.redis.id]
  at_rest_encryption_enabled = true
  transit_encryption_enabled = true
  auth_token                 = var.redis_auth_token
  snapshot_retention_limit   = 1
  apply_immediately          = false
}
