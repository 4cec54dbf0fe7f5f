build-merge/obj/src/metrics/metrics.o: src/metrics/metrics.c \
 src/metrics/metrics.h src/config/config.h src/common/alloc.h \
 src/common/bytebuf.h src/common/version.h src/ws/utf8.h
src/metrics/metrics.h:
src/config/config.h:
src/common/alloc.h:
src/common/bytebuf.h:
src/common/version.h:
src/ws/utf8.h:
