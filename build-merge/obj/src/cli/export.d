build-merge/obj/src/cli/export.o: src/cli/export.c src/cli/export.h \
 src/config/config.h src/cli/outputs.h src/store/crypto.h \
 src/store/store.h
src/cli/export.h:
src/config/config.h:
src/cli/outputs.h:
src/store/crypto.h:
src/store/store.h:
