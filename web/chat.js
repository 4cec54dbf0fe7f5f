// wsgate chat page: one WebSocket to /{stage}, the protocol of
// docs/protocol.md (chat, join_room, private_message, room_list,
// typing_indicator), reconnect with backoff. Every text from the network is
// inserted with textContent, never as HTML.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);

  const TYPING_IDLE_MS = 2000;     // stop "typing" after this long without input
  const TYPING_REFRESH_MS = 3000;  // re-send isTyping:true this often while typing
  const TYPING_EXPIRE_MS = 6000;   // forget someone's indicator after this long
  const ROOM_LIST_EVERY_MS = 15000;
  const MAX_MESSAGES = 500;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 30000;

  const st = {
    stage: null,
    userId: '',
    username: '',
    roomId: '',
    token: '',
    ws: null,
    wantOpen: false,     // the user wants to be connected
    attempt: 0,          // failed attempts since the last welcome
    retryTimer: 0,
    retryAt: 0,
    countdownTimer: 0,
    people: new Map(),   // userId -> username, in the current room
    typing: new Map(),   // userId -> { name, timer }
    typingSent: false,
    typingLastSent: 0,
    typingIdleTimer: 0,
    roomListTimer: 0,
    roomListPoll: 0,
    rooms: [],
    lastSeq: 0,          // newest chat seq seen in the current room (for resume)
    seen: new Set(),     // messageIds shown in the current room (history and live overlap)
  };

  // ---------- status and errors ----------

  function setStatus(text, kind) {
    const s = $('status');
    s.textContent = text;
    s.className = 'status' + (kind ? ' ' + kind : '');
  }

  function showError(text) {
    $('error-text').textContent = text;
    $('error').hidden = false;
  }

  function hideError() {
    $('error').hidden = true;
    $('error-text').textContent = '';
  }

  // ---------- the message log ----------

  function timeOf(ts) {
    const d = typeof ts === 'number' ? new Date(ts * 1000) : new Date();
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  function append(li) {
    const log = $('messages');
    const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
    log.appendChild(li);
    while (log.children.length > MAX_MESSAGES) log.removeChild(log.firstChild);
    if (nearBottom) log.scrollTop = log.scrollHeight;
  }

  function addSystem(text, cls) {
    const li = document.createElement('li');
    li.className = 'msg ' + (cls || 'system');
    li.textContent = text;
    append(li);
  }

  function addMessage({ who, text, ts, own, privateTag }) {
    const li = document.createElement('li');
    li.className = 'msg' + (own ? ' own' : '') + (privateTag ? ' private' : '');
    const meta = document.createElement('div');
    meta.className = 'meta';
    const w = document.createElement('span');
    w.className = 'who';
    w.textContent = who;
    meta.appendChild(w);
    if (privateTag) {
      const t = document.createElement('span');
      t.className = 'tag';
      t.textContent = privateTag;
      meta.appendChild(t);
    }
    const time = document.createElement('time');
    time.textContent = timeOf(ts);
    if (typeof ts === 'number') time.dateTime = new Date(ts * 1000).toISOString();
    meta.appendChild(time);
    const p = document.createElement('p');
    p.className = 'text';
    p.textContent = text;
    li.append(meta, p);
    append(li);
  }

  // ---------- rooms and people ----------

  function renderRooms() {
    const ul = $('rooms');
    const rooms = st.rooms.slice();
    if (st.roomId && !rooms.some((r) => r.roomId === st.roomId)) {
      rooms.push({ roomId: st.roomId, activeUsers: 1 });
      rooms.sort((a, b) => (a.roomId < b.roomId ? -1 : a.roomId > b.roomId ? 1 : 0));
    }
    ul.replaceChildren();
    for (const r of rooms) {
      const li = document.createElement('li');
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'room-btn';
      b.dataset.room = r.roomId;
      const name = document.createElement('span');
      name.textContent = '#' + r.roomId;
      const count = document.createElement('span');
      count.className = 'count';
      count.textContent = String(r.activeUsers);
      count.setAttribute('aria-label', r.activeUsers + (r.activeUsers === 1 ? ' person' : ' people'));
      b.append(name, count);
      if (r.roomId === st.roomId) b.setAttribute('aria-current', 'true');
      b.addEventListener('click', () => joinRoom(r.roomId));
      li.appendChild(b);
      ul.appendChild(li);
    }
  }

  function renderPeople() {
    const ul = $('people');
    const dl = $('known-users');
    ul.replaceChildren();
    dl.replaceChildren();
    const entries = [...st.people.entries()].sort((a, b) => a[1].localeCompare(b[1]));
    for (const [id, name] of entries) {
      const li = document.createElement('li');
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'person-btn';
      const n = document.createElement('span');
      n.textContent = name + (name !== id ? ' (' + id + ')' : '');
      b.appendChild(n);
      if (id === st.userId) {
        const you = document.createElement('span');
        you.className = 'you';
        you.textContent = 'you';
        b.appendChild(you);
        b.disabled = true;
      } else {
        b.setAttribute('aria-label', 'Message ' + name + ' privately');
        b.addEventListener('click', () => setTarget(id));
        const opt = document.createElement('option');
        opt.value = id;
        opt.label = name;
        dl.appendChild(opt);
      }
      li.appendChild(b);
      ul.appendChild(li);
    }
  }

  function requestRoomList(delay) {
    clearTimeout(st.roomListTimer);
    st.roomListTimer = setTimeout(() => send({ type: 'room_list' }), delay || 0);
  }

  function setRoom(roomId) {
    if (roomId !== st.roomId) {
      st.lastSeq = 0;
      st.seen.clear();
    }
    st.roomId = roomId;
    try { localStorage.setItem('wsgate.room', roomId); } catch (e) { /* private mode */ }
    $('room-title').textContent = '#' + roomId;
    document.title = '#' + roomId + ' · wsgate chat';
    st.people.clear();
    st.people.set(st.userId, st.username);
    clearTyping();
    renderPeople();
    renderRooms();
  }

  function joinRoom(roomId) {
    roomId = roomId.trim();
    if (!roomId || roomId === st.roomId) return;
    send({ type: 'join_room', roomId });
  }

  function setTarget(userId) {
    $('composer-to').value = userId;
    $('composer-to-clear').hidden = !userId;
    $('composer-input').focus();
  }

  // ---------- typing ----------

  function clearTyping() {
    for (const t of st.typing.values()) clearTimeout(t.timer);
    st.typing.clear();
    renderTyping();
  }

  function renderTyping() {
    const names = [...st.typing.values()].map((t) => t.name);
    let text = '';
    if (names.length === 1) text = names[0] + ' is typing…';
    else if (names.length === 2) text = names[0] + ' and ' + names[1] + ' are typing…';
    else if (names.length > 2) text = 'Several people are typing…';
    $('typing').textContent = text;
  }

  function setTyping(userId, name, on) {
    const old = st.typing.get(userId);
    if (old) clearTimeout(old.timer);
    if (on) {
      const timer = setTimeout(() => setTyping(userId, name, false), TYPING_EXPIRE_MS);
      st.typing.set(userId, { name, timer });
    } else {
      st.typing.delete(userId);
    }
    renderTyping();
  }

  function onComposerInput() {
    const v = $('composer-input').value;
    if (!v.trim()) {
      stopTyping();
      return;
    }
    const now = Date.now();
    if (!st.typingSent || now - st.typingLastSent > TYPING_REFRESH_MS) {
      if (send({ type: 'typing_indicator', isTyping: true })) {
        st.typingSent = true;
        st.typingLastSent = now;
      }
    }
    clearTimeout(st.typingIdleTimer);
    st.typingIdleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
  }

  function stopTyping() {
    clearTimeout(st.typingIdleTimer);
    if (st.typingSent) send({ type: 'typing_indicator', isTyping: false });
    st.typingSent = false;
  }

  // ---------- the connection ----------

  function send(obj) {
    if (!st.ws || st.ws.readyState !== WebSocket.OPEN) return false;
    st.ws.send(JSON.stringify(obj));
    return true;
  }

  function wsUrl() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const q = new URLSearchParams({ userId: st.userId, username: st.username, roomId: st.roomId });
    if (st.token) q.set('token', st.token);
    // After a dropped connection, ask for what was missed in this room.
    if (st.lastSeq > 0) q.set('sinceSeq', String(st.lastSeq));
    return proto + '//' + location.host + '/' + encodeURIComponent(st.stage) + '?' + q.toString();
  }

  function connect() {
    clearTimeout(st.retryTimer);
    clearInterval(st.countdownTimer);
    st.wantOpen = true;
    setStatus('Connecting…', 'connecting');
    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch (e) {
      setStatus('Cannot connect: ' + e.message, 'offline');
      return;
    }
    st.ws = ws;
    ws.addEventListener('message', (ev) => {
      if (st.ws !== ws) return;
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m && typeof m === 'object') handle(m);
    });
    ws.addEventListener('close', (ev) => {
      if (st.ws !== ws) return;
      st.ws = null;
      st.typingSent = false;
      clearInterval(st.roomListPoll);
      clearTyping();
      if (!st.wantOpen) return;
      // 1000 from the server is deliberate (e.g. closed from the dashboard):
      // do not fight it. Anything else is a dropped connection.
      if (ev.code === 1000) {
        st.wantOpen = false;
        setStatus('Disconnected by the server' + (ev.reason ? ': ' + ev.reason : ''), 'offline');
        addSystem('The server closed the connection. Use Reconnect to come back.', 'failed');
        showReconnect();
        return;
      }
      scheduleReconnect(ev);
    });
  }

  function showReconnect() {
    const b = $('disconnect');
    b.textContent = 'Reconnect';
    b.dataset.action = 'reconnect';
  }

  function scheduleReconnect(ev) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** st.attempt);
    const delay = Math.round(base / 2 + Math.random() * base / 2);
    st.attempt++;
    st.retryAt = Date.now() + delay;
    const why = ev.code === 1006 ? 'Connection lost' : 'Connection closed (' + ev.code + (ev.reason ? ': ' + ev.reason : '') + ')';
    const tick = () => {
      const s = Math.max(0, Math.ceil((st.retryAt - Date.now()) / 1000));
      setStatus(why + '. Reconnecting in ' + s + ' s…', 'offline');
    };
    tick();
    clearInterval(st.countdownTimer);
    st.countdownTimer = setInterval(tick, 1000);
    st.retryTimer = setTimeout(connect, delay);
  }

  function disconnect() {
    st.wantOpen = false;
    clearTimeout(st.retryTimer);
    clearInterval(st.countdownTimer);
    clearInterval(st.roomListPoll);
    stopTyping();
    if (st.ws) {
      const ws = st.ws;
      st.ws = null;
      ws.close(1000, 'bye');
    }
    setStatus('Not connected', '');
    $('chat').hidden = true;
    $('disconnect').hidden = true;
    $('join').hidden = false;
    $('join-name').focus();
  }

  // ---------- server messages ----------

  // One chat message of the current room, live or from history, shown once.
  function showChat(d) {
    if (!d || typeof d !== 'object') return;
    if (d.messageId) {
      if (st.seen.has(d.messageId)) return;
      st.seen.add(d.messageId);
    }
    if (typeof d.seq === 'number' && d.seq > st.lastSeq) st.lastSeq = d.seq;
    if (d.senderId) {
      st.typing.has(d.senderId) && setTyping(d.senderId, '', false);
      if (!st.people.has(d.senderId)) {
        st.people.set(d.senderId, d.senderName || d.senderId);
        renderPeople();
      }
    }
    addMessage({ who: d.senderName || d.senderId || '?', text: String(d.message ?? ''),
                 ts: d.timestamp, own: d.senderId === st.userId });
  }

  function handle(m) {
    const d = m.data && typeof m.data === 'object' ? m.data : {};
    switch (m.type) {
    case 'welcome':
      st.attempt = 0;
      clearInterval(st.countdownTimer);
      setStatus('Connected as ' + st.username, 'online');
      $('disconnect').textContent = 'Sign out';
      $('disconnect').dataset.action = 'signout';
      const resumed = st.lastSeq > 0 && (d.roomId || st.roomId) === st.roomId;
      setRoom(d.roomId || st.roomId);
      addSystem(d.message || 'Connected.');
      // A first visit shows recent history; a resumed one gets the missed
      // messages replayed by the server (sinceSeq).
      if (!resumed) send({ type: 'history', limit: 50 });
      requestRoomList();
      clearInterval(st.roomListPoll);
      st.roomListPoll = setInterval(() => send({ type: 'room_list' }), ROOM_LIST_EVERY_MS);
      break;
    case 'history':
      if (d.roomId !== st.roomId || !Array.isArray(d.messages)) break;
      for (const h of d.messages) showChat(h);
      break;
    case 'chat':
      if (d.roomId && d.roomId !== st.roomId) break;
      showChat(d);
      break;
    case 'history_gap':
      // The resume could not replay everything since our last seq: say so.
      if (d.roomId !== st.roomId) break;
      if (d.reason === 'ahead') {
        // This store never gave the seqs we saw (restored): follow its counter.
        st.lastSeq = typeof d.lastSeq === 'number' ? d.lastSeq : 0;
        addSystem('The server\'s history of #' + d.roomId + ' was reset; older messages may differ.');
      } else {
        addSystem('Messages ' + (d.sinceSeq + 1) + ' to ' + (d.oldestSeq - 1) + ' of #' + d.roomId +
                  ' expired and cannot be shown.');
      }
      break;
    case 'private_message':
      addMessage({ who: d.senderName || d.senderId || '?', text: String(d.message ?? ''),
                   ts: d.timestamp, own: false, privateTag: 'private message to you' });
      break;
    case 'user_joined':
      if (d.userId === st.userId && d.roomId !== st.roomId) {
        setRoom(d.roomId);
        addSystem('You joined #' + d.roomId + '.');
        send({ type: 'history', limit: 50 });
      } else if (d.userId !== st.userId && d.roomId === st.roomId) {
        st.people.set(d.userId, d.username || d.userId);
        renderPeople();
        addSystem((d.username || d.userId) + ' joined #' + d.roomId + '.');
      }
      requestRoomList(250);
      break;
    case 'user_left':
      if (d.roomId === st.roomId && d.userId !== st.userId) {
        st.people.delete(d.userId);
        setTyping(d.userId, '', false);
        renderPeople();
        addSystem((d.username || d.userId) + ' left #' + d.roomId + '.');
      }
      requestRoomList(250);
      break;
    case 'room_list':
      st.rooms = Array.isArray(d.rooms) ? d.rooms.filter((r) => r && typeof r.roomId === 'string') : [];
      renderRooms();
      break;
    case 'typing_indicator':
      if (d.roomId === st.roomId && d.userId !== st.userId)
        setTyping(d.userId, d.username || d.userId, d.isTyping !== false);
      break;
    case 'error': {
      const text = d.message || 'Something went wrong';
      showError(text + (d.code ? ' (' + d.code + ')' : ''));
      addSystem('Error: ' + text, 'failed');
      break;
    }
    default:
      break; // messages from newer servers: ignore
    }
  }

  // ---------- forms ----------

  function onJoin(ev) {
    ev.preventDefault();
    const name = $('join-name').value.trim();
    const room = $('join-room').value.trim();
    if (!name || !room) return;
    st.username = name;
    st.userId = $('join-user').value.trim() || name;
    st.token = $('join-token').value;
    st.roomId = room;
    st.attempt = 0;
    try {
      localStorage.setItem('wsgate.name', name);
      localStorage.setItem('wsgate.room', room);
      localStorage.setItem('wsgate.user', $('join-user').value.trim());
    } catch (e) { /* private mode */ }
    $('join').hidden = true;
    $('chat').hidden = false;
    $('disconnect').hidden = false;
    $('messages').replaceChildren();
    hideError();
    st.rooms = [];
    setRoom(room);
    connect();
    $('composer-input').focus();
  }

  function onSend(ev) {
    ev.preventDefault();
    const input = $('composer-input');
    const text = input.value;
    if (!text.trim()) return;
    const target = $('composer-to').value.trim();
    const msg = target
      ? { type: 'private_message', targetUserId: target, message: text }
      : { type: 'chat', message: text };
    if (!send(msg)) {
      showError('Not connected: the message was not sent.');
      return;
    }
    stopTyping();
    hideError();
    if (target) {
      addMessage({ who: 'You', text, own: true, privateTag: 'private to ' + target });
    }
    input.value = '';
    input.focus();
  }

  async function init() {
    try {
      $('join-name').value = localStorage.getItem('wsgate.name') || '';
      $('join-room').value = localStorage.getItem('wsgate.room') || 'general';
      $('join-user').value = localStorage.getItem('wsgate.user') || '';
    } catch (e) { /* private mode */ }

    $('join-form').addEventListener('submit', onJoin);
    $('composer').addEventListener('submit', onSend);
    $('composer-input').addEventListener('input', onComposerInput);
    $('composer-input').addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && $('composer-to').value) setTarget('');
    });
    $('composer-to').addEventListener('input', () => {
      $('composer-to-clear').hidden = !$('composer-to').value;
    });
    $('composer-to-clear').addEventListener('click', () => setTarget(''));
    $('room-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      joinRoom($('room-input').value);
      $('room-input').value = '';
    });
    $('error-close').addEventListener('click', hideError);
    $('disconnect').addEventListener('click', () => {
      if ($('disconnect').dataset.action === 'reconnect') {
        st.attempt = 0;
        connect();
      } else {
        disconnect();
      }
    });

    const submit = $('join-form').querySelector('button[type="submit"]');
    submit.disabled = true;
    try {
      const r = await fetch('/web-config.json', { cache: 'no-store' });
      if (!r.ok) throw new Error('HTTP ' + r.status);
      const cfg = await r.json();
      st.stage = cfg.stage;
      submit.disabled = false;
    } catch (e) {
      const err = $('join-error');
      err.textContent = 'Could not load the server configuration (' + e.message + '). Reload the page to try again.';
      err.hidden = false;
    }
    if (!$('join-name').value) $('join-name').focus();
  }

  init();
})();
