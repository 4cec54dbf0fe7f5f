additional_tags = { Owner = "x", "Cost Center": "y",
  z = "w"
}
