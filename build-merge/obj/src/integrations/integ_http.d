build-merge/obj/src/integrations/integ_http.o: \
 src/integrations/integ_http.c src/integrations/integ_http.h \
 src/common/alloc.h src/common/clock.h
src/integrations/integ_http.h:
src/common/alloc.h:
src/common/clock.h:
