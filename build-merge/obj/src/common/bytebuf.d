build-merge/obj/src/common/bytebuf.o: src/common/bytebuf.c \
 src/common/bytebuf.h src/common/alloc.h
src/common/bytebuf.h:
src/common/alloc.h:
