package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/feellmoose/gridkv/internal/timerpool"
)

// Handler serves one request kind. from is the advertised address the
// calling node named when it connected (not authenticated yet, see the
// package Caveats). req belongs to the handler, which may keep it. ctx
// carries the caller's remaining time budget and is cancelled when the
// Transport closes; Close waits for running handlers, so they must honour
// ctx. A returned error reaches the caller as a *RemoteError carrying its
// message. Handlers run concurrently, each request on a goroutine of its own.
type Handler func(ctx context.Context, from string, req []byte) ([]byte, error)

// maxHandlersPerLink bounds the handlers running at once for one inbound link; a request past
// it is answered with an error at once rather than queued.
const maxHandlersPerLink = 4096

// Handle registers h for requests of the given kind, replacing any handler
// registered before; a nil h removes the registration. Requests of a kind
// with no handler are answered with a RemoteError matching ErrUnknownKind.
func (t *Transport) Handle(kind uint8, h Handler) {
	t.handlersMu.Lock()
	defer t.handlersMu.Unlock()
	if h == nil {
		delete(t.handlers, kind)
		return
	}
	t.handlers[kind] = h
}

// Call sends req to the handler registered for kind on the node at addr and
// returns its response. It honours ctx: cancellation or the deadline makes
// it return ctx's error promptly. Without a ctx deadline the call is capped
// at ReadTimeout. A handler error comes back as a *RemoteError. Call is safe
// for concurrent use; calls to one peer share this node's MaxConns links to
// it, many in flight on each.
//
// A Call that fails after the request was queued on a link may or may not
// have run the handler. A request that certainly did not leave (the link
// could not be dialled, or had already failed) fails with ErrNotSent; a link
// found broken before the request was queued is replaced once.
func (t *Transport) Call(ctx context.Context, addr string, kind uint8, req []byte) ([]byte, error) {
	if t.isClosed() {
		return nil, fmt.Errorf("%w: %w", ErrNotSent, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotSent, t.callError(ctx, addr, kind, err))
	}
	deadline, hasDeadline := ctx.Deadline()
	if !hasDeadline {
		deadline = time.Now().Add(t.opts.ReadTimeout)
	}
	budget := time.Until(deadline)
	if budget <= 0 {
		return nil, fmt.Errorf("%w: %w", ErrNotSent, t.callError(ctx, addr, kind, context.DeadlineExceeded))
	}
	if len(req) > t.opts.MaxFrameSize {
		return nil, fmt.Errorf("transport: call %s kind %d: request %w: %d bytes, limit %d", addr, kind, ErrFrameTooLarge, len(req), t.opts.MaxFrameSize)
	}

	peer := t.linkSet(addr)
	slot := peer.next.Add(1)
	for attempt := 0; ; attempt++ {
		l, err := t.link(peer, slot, min(budget, t.opts.ReadTimeout+t.opts.WriteTimeout))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNotSent, t.callError(ctx, addr, kind, err))
		}
		w := getWaiter(nil)
		id, err := l.register(w)
		if err == nil {
			buf := getLinkBuf()
			b := appendFrameHeader(*buf, frameHeader{typ: frameCallReq, kind: kind, id: id, aux: uint64(budget)})
			*buf = finishFrame(append(b, req...))
			err = l.send(*buf, true)
			putLinkBuf(buf)
			if err == nil {
				return t.await(ctx, l, w, id, addr, kind, hasDeadline, budget)
			}
			l.forget(id, w)
		} else {
			putWaiter(w)
		}
		// The link had failed before the request was queued: nothing left.
		if attempt > 0 || ctx.Err() != nil || t.isClosed() {
			return nil, fmt.Errorf("%w: %w", ErrNotSent, t.callError(ctx, addr, kind, err))
		}
		t.logger.Debug("transport: link was broken; retrying on a new one", "peer", addr, "error", err)
	}
}

// await waits for the answer to request id on l.
func (t *Transport) await(ctx context.Context, l *link, w *waiter, id uint64, addr string, kind uint8, hasDeadline bool, budget time.Duration) ([]byte, error) {
	var expired <-chan time.Time
	if !hasDeadline {
		timer := timerpool.Get(budget)
		defer timerpool.Put(timer)
		expired = timer.C
	}
	var err error
	select {
	case err = <-w.done:
		body := w.body
		putWaiter(w)
		if err != nil {
			var re *RemoteError
			if !errors.As(err, &re) {
				err = t.callError(ctx, addr, kind, err)
			}
			return nil, err
		}
		return body, nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-expired:
		err = context.DeadlineExceeded
	case <-t.done:
		err = ErrClosed
	}
	l.forget(id, w)
	return nil, t.callError(ctx, addr, kind, err)
}

// callError gives a failed call's error its context: ctx's own error when
// ctx ended (so errors.Is(err, context.Canceled) works), and
// context.DeadlineExceeded for the ReadTimeout cap.
func (t *Transport) callError(ctx context.Context, addr string, kind uint8, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		err = ctxErr
	} else if isTimeout(err) {
		err = context.DeadlineExceeded
	} else if t.isClosed() {
		err = ErrClosed
	}
	return fmt.Errorf("transport: call %s kind %d: %w", addr, kind, err)
}

// isTimeout reports whether err is an I/O deadline expiry.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// serveCallFrame starts the handler of a request that arrived on l; the handler's goroutine
// answers on l. It returns an error only for a frame that breaks the protocol.
func (t *Transport) serveCallFrame(l *link, h frameHeader, body []byte) error {
	if len(body) > t.opts.MaxFrameSize {
		return fmt.Errorf("%w: request of %d bytes, limit %d", ErrFrameTooLarge, len(body), t.opts.MaxFrameSize)
	}
	t.handlersMu.RLock()
	handler := t.handlers[h.kind]
	t.handlersMu.RUnlock()
	switch {
	case handler == nil:
		l.answerCall(h.id, statusUnknownKind, []byte(fmt.Sprintf("no handler for request kind %d", h.kind)), t.opts.MaxFrameSize)
		return nil
	case h.aux == 0 || h.aux > uint64(1<<62):
		l.answerCall(h.id, statusError, []byte("caller's deadline passed before the request arrived"), t.opts.MaxFrameSize)
		return nil
	case l.handlers.Add(1) > maxHandlersPerLink:
		l.handlers.Add(-1)
		l.answerCall(h.id, statusError, []byte("too many requests in flight from this peer"), t.opts.MaxFrameSize)
		return nil
	}
	started := t.goTracked("request handler", nil, func() {
		defer l.handlers.Add(-1)
		ctx, cancel := context.WithTimeout(t.baseCtx, time.Duration(h.aux))
		defer cancel()
		resp, err := t.runHandler(ctx, handler, h.kind, l.peer, body)
		if err != nil {
			l.answerCall(h.id, statusError, []byte(err.Error()), t.opts.MaxFrameSize)
			return
		}
		l.answerCall(h.id, statusOK, resp, t.opts.MaxFrameSize)
	})
	if !started {
		l.handlers.Add(-1)
	}
	return nil
}

// answerCall sends the answer to request id.
func (l *link) answerCall(id uint64, status uint8, body []byte, maxSize int) {
	if len(body) > maxSize {
		status, body = statusError, []byte(fmt.Sprintf("response of %d bytes: %v, limit %d", len(body), ErrFrameTooLarge, maxSize))
	}
	buf := getLinkBuf()
	b := appendFrameHeader(*buf, frameHeader{typ: frameCallResp, kind: status, id: id})
	*buf = finishFrame(append(b, body...))
	_ = l.send(*buf, true)
	putLinkBuf(buf)
}

// runHandler calls h, turning a panic into an error response: one bad
// request must not take the node down.
func (t *Transport) runHandler(ctx context.Context, h Handler, kind uint8, from string, req []byte) (resp []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			t.logger.Error("transport: handler panicked", "kind", kind, "peer", from, "panic", r)
			err = fmt.Errorf("handler for kind %d panicked: %v", kind, r)
		}
	}()
	return h(ctx, from, req)
}
