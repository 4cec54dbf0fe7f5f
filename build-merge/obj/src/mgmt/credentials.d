build-merge/obj/src/mgmt/credentials.o: src/mgmt/credentials.c \
 src/mgmt/credentials.h src/config/config.h
src/mgmt/credentials.h:
src/config/config.h:
