build-merge/obj/src/main.o: src/main.c src/app/app.h src/app/auth.h \
 src/config/config.h src/http/request.h src/app/registry.h \
 src/common/strmap.h src/net/conn.h src/net/tls.h src/ws/deflate.h \
 src/ws/frame.h src/ws/utf8.h src/throttle/throttle.h src/app/router.h \
 src/engine/engine.h src/engine/directory.h src/net/server.h \
 src/store/store.h src/store/crypto.h src/metrics/metrics.h \
 src/mgmt/credentials.h src/trace/trace.h src/app/echo.h \
 src/cli/datalock.h src/cli/export.h src/common/version.h \
 src/cli/outputs.h src/common/alloc.h src/common/fs.h src/config/config.h \
 src/config/listen.h src/log/log.h src/metrics/metrics.h \
 src/store/crypto.h src/store/store.h src/net/server.h
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
src/app/echo.h:
src/cli/datalock.h:
src/cli/export.h:
src/common/version.h:
src/cli/outputs.h:
src/common/alloc.h:
src/common/fs.h:
src/config/config.h:
src/config/listen.h:
src/log/log.h:
src/metrics/metrics.h:
src/store/crypto.h:
src/store/store.h:
src/net/server.h:
