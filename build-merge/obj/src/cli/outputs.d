build-merge/obj/src/cli/outputs.o: src/cli/outputs.c src/cli/outputs.h \
 src/config/config.h src/common/alloc.h src/mgmt/credentials.h
src/cli/outputs.h:
src/config/config.h:
src/common/alloc.h:
src/mgmt/credentials.h:
