build-merge/obj/src/engine/local.o: src/engine/local.c src/common/alloc.h \
 src/engine/engine.h src/engine/directory.h src/common/strmap.h \
 src/net/conn.h src/http/request.h src/net/tls.h src/ws/deflate.h \
 src/ws/frame.h src/ws/utf8.h src/net/server.h src/config/config.h \
 src/store/store.h src/store/crypto.h
src/common/alloc.h:
src/engine/engine.h:
src/engine/directory.h:
src/common/strmap.h:
src/net/conn.h:
src/http/request.h:
src/net/tls.h:
src/ws/deflate.h:
src/ws/frame.h:
src/ws/utf8.h:
src/net/server.h:
src/config/config.h:
src/store/store.h:
src/store/crypto.h:
