x = [[{a = [1, {b = null}]}], true, false]
