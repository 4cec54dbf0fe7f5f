build-merge/obj/src/store/crypto.o: src/store/crypto.c src/store/crypto.h \
 src/common/alloc.h src/common/base64.h src/common/random.h
src/store/crypto.h:
src/common/alloc.h:
src/common/base64.h:
src/common/random.h:
