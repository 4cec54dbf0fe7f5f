build-merge/obj/src/net/conn.o: src/net/conn.c src/net/conn.h \
 src/http/request.h src/net/tls.h src/ws/deflate.h src/ws/frame.h \
 src/ws/utf8.h src/common/alloc.h src/common/random.h \
 src/http/handshake.h src/log/log.h src/net/server.h src/config/config.h
src/net/conn.h:
src/http/request.h:
src/net/tls.h:
src/ws/deflate.h:
src/ws/frame.h:
src/ws/utf8.h:
src/common/alloc.h:
src/common/random.h:
src/http/handshake.h:
src/log/log.h:
src/net/server.h:
src/config/config.h:
