build-merge/obj/src/common/alloc.o: src/common/alloc.c src/common/alloc.h
src/common/alloc.h:
