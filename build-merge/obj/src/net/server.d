build-merge/obj/src/net/server.o: src/net/server.c src/net/server.h \
 src/config/config.h src/http/request.h src/net/conn.h src/net/tls.h \
 src/ws/deflate.h src/ws/frame.h src/ws/utf8.h src/common/alloc.h \
 src/common/clock.h src/common/strmap.h src/log/log.h
src/net/server.h:
src/config/config.h:
src/http/request.h:
src/net/conn.h:
src/net/tls.h:
src/ws/deflate.h:
src/ws/frame.h:
src/ws/utf8.h:
src/common/alloc.h:
src/common/clock.h:
src/common/strmap.h:
src/log/log.h:
