build-merge/obj/src/net/tls.o: src/net/tls.c src/net/tls.h \
 src/common/alloc.h
src/net/tls.h:
src/common/alloc.h:
