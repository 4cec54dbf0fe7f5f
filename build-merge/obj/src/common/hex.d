build-merge/obj/src/common/hex.o: src/common/hex.c src/common/hex.h
src/common/hex.h:
