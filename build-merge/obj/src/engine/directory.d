build-merge/obj/src/engine/directory.o: src/engine/directory.c \
 src/engine/directory.h src/common/strmap.h src/net/conn.h \
 src/http/request.h src/net/tls.h src/ws/deflate.h src/ws/frame.h \
 src/ws/utf8.h src/common/alloc.h
src/engine/directory.h:
src/common/strmap.h:
src/net/conn.h:
src/http/request.h:
src/net/tls.h:
src/ws/deflate.h:
src/ws/frame.h:
src/ws/utf8.h:
src/common/alloc.h:
