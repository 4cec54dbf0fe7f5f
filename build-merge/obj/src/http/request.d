build-merge/obj/src/http/request.o: src/http/request.c src/http/request.h \
 src/common/alloc.h
src/http/request.h:
src/common/alloc.h:
