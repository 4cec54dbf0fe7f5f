build-merge/obj/src/app/auth_jwt.o: src/app/auth_jwt.c src/app/auth.h \
 src/config/config.h src/http/request.h src/common/alloc.h \
 src/common/base64.h
src/app/auth.h:
src/config/config.h:
src/http/request.h:
src/common/alloc.h:
src/common/base64.h:
