api_description = "tab\there \"q\" \\ \u00e9 \U0001F600 $${x} %%{y}"
