build-merge/obj/src/cli/datalock.o: src/cli/datalock.c src/cli/datalock.h
src/cli/datalock.h:
