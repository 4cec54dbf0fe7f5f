build-merge/obj/src/http/handshake.o: src/http/handshake.c \
 src/http/handshake.h src/http/request.h src/ws/deflate.h \
 src/common/alloc.h src/common/base64.h
src/http/handshake.h:
src/http/request.h:
src/ws/deflate.h:
src/common/alloc.h:
src/common/base64.h:
