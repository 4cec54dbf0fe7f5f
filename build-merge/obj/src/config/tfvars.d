build-merge/obj/src/config/tfvars.o: src/config/tfvars.c \
 src/config/tfvars.h src/common/alloc.h src/common/bytebuf.h \
 src/common/hex.h src/ws/utf8.h
src/config/tfvars.h:
src/common/alloc.h:
src/common/bytebuf.h:
src/common/hex.h:
src/ws/utf8.h:
