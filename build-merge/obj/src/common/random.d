build-merge/obj/src/common/random.o: src/common/random.c \
 src/common/random.h src/common/hex.h
src/common/random.h:
src/common/hex.h:
