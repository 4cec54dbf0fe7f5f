build-merge/obj/src/config/config.o: src/config/config.c \
 src/config/config.h src/common/alloc.h src/config/config_table.h \
 src/config/tfvars.h src/engine/redis_url.h src/ws/utf8.h
src/config/config.h:
src/common/alloc.h:
src/config/config_table.h:
src/config/tfvars.h:
src/engine/redis_url.h:
src/ws/utf8.h:
