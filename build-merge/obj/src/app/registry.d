build-merge/obj/src/app/registry.o: src/app/registry.c src/app/registry.h \
 src/common/strmap.h src/net/conn.h src/http/request.h src/net/tls.h \
 src/ws/deflate.h src/ws/frame.h src/ws/utf8.h src/throttle/throttle.h \
 src/config/config.h src/common/alloc.h
src/app/registry.h:
src/common/strmap.h:
src/net/conn.h:
src/http/request.h:
src/net/tls.h:
src/ws/deflate.h:
src/ws/frame.h:
src/ws/utf8.h:
src/throttle/throttle.h:
src/config/config.h:
src/common/alloc.h:
