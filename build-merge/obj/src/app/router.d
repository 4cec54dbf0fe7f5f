build-merge/obj/src/app/router.o: src/app/router.c src/app/router.h \
 src/common/alloc.h
src/app/router.h:
src/common/alloc.h:
