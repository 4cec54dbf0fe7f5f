build-merge/obj/src/common/strmap.o: src/common/strmap.c \
 src/common/strmap.h src/common/alloc.h
src/common/strmap.h:
src/common/alloc.h:
