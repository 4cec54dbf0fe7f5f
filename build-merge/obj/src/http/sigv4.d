build-merge/obj/src/http/sigv4.o: src/http/sigv4.c src/http/sigv4.h \
 src/http/request.h src/common/alloc.h src/common/bytebuf.h \
 src/common/hex.h
src/http/sigv4.h:
src/http/request.h:
src/common/alloc.h:
src/common/bytebuf.h:
src/common/hex.h:
