redis_url = "redis://u:p@h:1/2"
redis_urls = ["redis://:x@a", "redis://b"]
