build-merge/obj/src/web/web.o: src/web/web.c src/web/web.h \
 src/http/request.h src/net/conn.h src/net/tls.h src/ws/deflate.h \
 src/ws/frame.h src/ws/utf8.h
src/web/web.h:
src/http/request.h:
src/net/conn.h:
src/net/tls.h:
src/ws/deflate.h:
src/ws/frame.h:
src/ws/utf8.h:
