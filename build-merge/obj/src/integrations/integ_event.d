build-merge/obj/src/integrations/integ_event.o: \
 src/integrations/integ_event.c src/integrations/integ_event.h \
 src/app/router.h src/common/alloc.h src/common/base64.h \
 src/http/request.h src/ws/utf8.h
src/integrations/integ_event.h:
src/app/router.h:
src/common/alloc.h:
src/common/base64.h:
src/http/request.h:
src/ws/utf8.h:
