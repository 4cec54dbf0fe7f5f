build-merge/obj/src/common/fs.o: src/common/fs.c src/common/fs.h \
 src/common/alloc.h
src/common/fs.h:
src/common/alloc.h:
