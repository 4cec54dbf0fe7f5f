build-merge/obj/src/mgmt/mgmt.o: src/mgmt/mgmt.c src/mgmt/mgmt.h \
 src/app/app.h src/app/auth.h src/config/config.h src/http/request.h \
 src/app/registry.h src/common/strmap.h src/net/conn.h src/net/tls.h \
 src/ws/deflate.h src/ws/frame.h src/ws/utf8.h src/throttle/throttle.h \
 src/app/router.h src/engine/engine.h src/engine/directory.h \
 src/net/server.h src/store/store.h src/store/crypto.h \
 src/metrics/metrics.h src/mgmt/credentials.h src/trace/trace.h \
 src/app/handlers.h src/common/alloc.h src/http/sigv4.h src/log/log.h \
 src/web/web.h
src/mgmt/mgmt.h:
src/app/app.h:
src/app/auth.h:
src/config/config.h:
src/http/request.h:
src/app/registry.h:
src/common/strmap.h:
src/net/conn.h:
src/net/tls.h:
src/ws/deflate.h:
src/ws/frame.h:
src/ws/utf8.h:
src/throttle/throttle.h:
src/app/router.h:
src/engine/engine.h:
src/engine/directory.h:
src/net/server.h:
src/store/store.h:
src/store/crypto.h:
src/metrics/metrics.h:
src/mgmt/credentials.h:
src/trace/trace.h:
src/app/handlers.h:
src/common/alloc.h:
src/http/sigv4.h:
src/log/log.h:
src/web/web.h:
