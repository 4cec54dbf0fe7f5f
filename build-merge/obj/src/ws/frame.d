build-merge/obj/src/ws/frame.o: src/ws/frame.c src/ws/frame.h \
 src/ws/deflate.h src/ws/utf8.h src/common/alloc.h
src/ws/frame.h:
src/ws/deflate.h:
src/ws/utf8.h:
src/common/alloc.h:
