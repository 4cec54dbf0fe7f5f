build-merge/obj/src/app/auth.o: src/app/auth.c src/app/auth.h \
 src/config/config.h src/http/request.h src/common/alloc.h src/ws/utf8.h
src/app/auth.h:
src/config/config.h:
src/http/request.h:
src/common/alloc.h:
src/ws/utf8.h:
