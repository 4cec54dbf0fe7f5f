api_description = <<-EOT
    line one
      line two
    EOT
stage_name = "prod"
