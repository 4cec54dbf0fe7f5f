build-merge/obj/src/integrations/integ.o: src/integrations/integ.c \
 src/integrations/integ.h src/app/auth.h src/config/config.h \
 src/http/request.h src/log/log.h src/metrics/metrics.h src/net/conn.h \
 src/net/tls.h src/ws/deflate.h src/ws/frame.h src/ws/utf8.h \
 src/common/alloc.h src/common/clock.h src/common/random.h \
 src/common/strmap.h src/cli/outputs.h src/integrations/integ_event.h \
 src/integrations/integ_http.h src/net/server.h
src/integrations/integ.h:
src/app/auth.h:
src/config/config.h:
src/http/request.h:
src/log/log.h:
src/metrics/metrics.h:
src/net/conn.h:
src/net/tls.h:
src/ws/deflate.h:
src/ws/frame.h:
src/ws/utf8.h:
src/common/alloc.h:
src/common/clock.h:
src/common/random.h:
src/common/strmap.h:
src/cli/outputs.h:
src/integrations/integ_event.h:
src/integrations/integ_http.h:
src/net/server.h:
