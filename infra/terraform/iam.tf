# Least privilege for the application pods (web, workers, migrations): only object reads and writes
# under clinics/ in the media bucket (and HEAD of the readiness probe's key), and listing the bucket.
# No bucket administration, no other bucket, no other AWS service.

data "aws_iam_policy_document" "pod_assume" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]
    principals {
      type        = "Service"
      identifiers = ["pods.eks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "app" {
  name_prefix        = "xcaliber-${var.environment}-app-"
  assume_role_policy = data.aws_iam_policy_document.pod_assume.json
}

data "aws_iam_policy_document" "app_media" {
  statement {
    sid = "Objects"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:PutObjectTagging", # presigned direct-upload forms tag staging objects
      "s3:DeleteObject",
    ]
    resources = ["${aws_s3_bucket.media.arn}/clinics/*"]
  }

  statement {
    sid       = "ReadinessProbe"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.media.arn}/readyz/*"]
  }

  # With ListBucket a HEAD of a missing key answers 404 (not 403), which the storage layer's exists()
  # needs. Not narrowed by s3:prefix: that condition key is absent on the implicit check of a HEAD.
  statement {
    sid       = "List"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.media.arn]
  }
}

resource "aws_iam_role_policy" "app_media" {
  name   = "media-bucket"
  role   = aws_iam_role.app.id
  policy = data.aws_iam_policy_document.app_media.json
}

resource "aws_eks_pod_identity_association" "app" {
  cluster_name    = aws_eks_cluster.main.name
  namespace       = var.k8s_namespace
  service_account = var.k8s_service_account
  role_arn        = aws_iam_role.app.arn
}
