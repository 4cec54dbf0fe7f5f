build-merge/obj/src/ws/deflate.o: src/ws/deflate.c src/ws/deflate.h \
 src/common/alloc.h
src/ws/deflate.h:
src/common/alloc.h:
