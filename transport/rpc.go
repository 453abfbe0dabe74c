package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/hashicorp/yamux"
)

// Handler serves one request kind. from is the advertised address the
// calling node named when it connected (not authenticated yet, see the
// package Caveats). req belongs to the handler, which may keep it. ctx
// carries the caller's remaining time budget and is cancelled when the
// Transport closes; Close waits for running handlers, so they must honour
// ctx. A returned error reaches the caller as a *RemoteError carrying its
// message. Handlers run concurrently, one goroutine per request stream.
type Handler func(ctx context.Context, from string, req []byte) ([]byte, error)

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
// for concurrent use; concurrent calls to one peer use separate streams over
// at most MaxConns connections, and up to MaxIdle finished streams per peer
// are kept for reuse.
//
// A Call that fails after the request was written may or may not have run
// the handler. Call retries only when the request certainly did not leave:
// a kept idle stream whose connection broke meanwhile is replaced by a new
// one.
func (t *Transport) Call(ctx context.Context, addr string, kind uint8, req []byte) ([]byte, error) {
	if t.isClosed() {
		return nil, fmt.Errorf("%w: %w", ErrNotSent, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotSent, t.callError(ctx, addr, kind, err))
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(t.opts.ReadTimeout)
	} else if !time.Now().Before(deadline) {
		// The deadline has passed but ctx's own timer may not have fired
		// yet (a stream deadline at the same instant can fire first): the
		// ctx is over all the same, so nothing is sent.
		return nil, fmt.Errorf("%w: %w", ErrNotSent, t.callError(ctx, addr, kind, context.DeadlineExceeded))
	}

	p := t.peer(addr)
	for {
		st, s := p.takeIdle()
		reused := st != nil
		if st == nil {
			dialCtx, cancel := context.WithDeadline(ctx, deadline)
			var err error
			st, s, err = t.openStream(dialCtx, p, []byte{streamRequest})
			cancel()
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrNotSent, t.callError(ctx, addr, kind, err))
			}
		}
		resp, sent, err := t.roundTrip(ctx, p, s, st, deadline, kind, req)
		if err != nil && !sent && reused && ctx.Err() == nil && !t.isClosed() {
			// A kept stream whose connection died while idle (the peer
			// restarted, say). The request never left, so trying a fresh
			// stream cannot run the handler twice. The broken session was
			// closed, so its other idle streams are skipped too.
			t.logger.Debug("transport: idle stream was broken; retrying on a new one", "peer", addr, "error", err)
			continue
		}
		if err != nil {
			var re *RemoteError
			if errors.As(err, &re) || errors.Is(err, ErrFrameTooLarge) {
				return nil, err
			}
			if !sent {
				return nil, fmt.Errorf("%w: %w", ErrNotSent, t.callError(ctx, addr, kind, err))
			}
			return nil, t.callError(ctx, addr, kind, err)
		}
		return resp, nil
	}
}

// roundTrip sends one request on st, a stream of s, and reads its response,
// then keeps st for reuse or closes it. sent reports whether any of the
// request may have reached the peer: when false the handler certainly did
// not run.
func (t *Transport) roundTrip(ctx context.Context, p *peer, s *outSession, st *yamux.Stream, deadline time.Time, kind uint8, req []byte) (resp []byte, sent bool, err error) {
	// Cancellation is delivered by moving the stream's deadlines into the
	// past, which wakes a blocked read or write at once.
	stop := context.AfterFunc(ctx, func() { _ = st.SetDeadline(time.Unix(1, 0)) })
	_ = st.SetReadDeadline(deadline)
	writeDeadline := time.Now().Add(t.opts.WriteTimeout)
	if deadline.Before(writeDeadline) {
		writeDeadline = deadline
	}
	_ = st.SetWriteDeadline(writeDeadline)

	var in envelope
	err = writeFrame(st, &envelope{Kind: kind, TimeoutNanos: int64(time.Until(deadline)), Body: req}, t.opts.MaxFrameSize)
	refused := errors.Is(err, ErrFrameTooLarge) // refused before writing a byte
	if err == nil {
		sent = true
		err = readFrame(st, t.opts.MaxFrameSize, nil, &in)
	}
	cancelled := !stop()

	switch {
	case (err == nil || refused) && !cancelled:
		_ = st.SetDeadline(time.Time{})
		if !p.putIdle(st, s, t.opts.MaxIdle) {
			_ = st.Close()
		}
	case err != nil && !sent && !refused:
		// Writing failed: the connection is broken (or the stream timed
		// out before any byte left); don't let other callers find it.
		_ = st.Close()
		if !isTimeout(err) {
			_ = st.Session().Close()
		}
	default:
		// The stream may hold half a frame or a late response: never reuse it.
		_ = st.Close()
		if err != nil && isProtocolError(err) {
			t.logger.Warn("transport: malformed response, closing connection", "peer", p.addr, "error", err)
			_ = st.Session().Close()
		}
	}
	if refused {
		return nil, false, fmt.Errorf("transport: call %s kind %d: request %w", p.addr, kind, err)
	}
	if err != nil {
		return nil, sent, err
	}

	switch in.Status {
	case statusOK:
		return in.Body, true, nil
	case statusError:
		return nil, true, &RemoteError{Msg: in.Err}
	case statusUnknownKind:
		return nil, true, &RemoteError{Msg: in.Err, unknownKind: true}
	default:
		_ = st.Session().Close()
		return nil, true, fmt.Errorf("%w: response status %d", errMalformedFrame, in.Status)
	}
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

// serveRequests answers request frames on st one at a time until the peer
// closes the stream. Between requests the stream may sit idle without a
// deadline (the caller keeps it for reuse); once a frame has begun it must
// arrive within ReadTimeout.
func (t *Transport) serveRequests(sess *yamux.Session, st *yamux.Stream, from string) {
	defer func() { _ = st.Close() }()
	startDeadline := func() error { return st.SetReadDeadline(time.Now().Add(t.opts.ReadTimeout)) }
	for {
		var req envelope
		err := readFrame(st, t.opts.MaxFrameSize, startDeadline, &req)
		if err != nil {
			switch {
			case errors.Is(err, io.EOF), t.isClosed():
			case isProtocolError(err):
				// Garbage from the peer: drop its whole connection.
				t.logger.Warn("transport: malformed request, closing connection", "peer", from, "error", err)
				_ = sess.Close()
			default:
				t.logger.Debug("transport: request stream failed", "peer", from, "error", err)
			}
			return
		}
		_ = st.SetReadDeadline(time.Time{})

		resp := t.dispatch(&req, from)
		_ = st.SetWriteDeadline(time.Now().Add(t.opts.WriteTimeout))
		err = writeFrame(st, &resp, t.opts.MaxFrameSize)
		if errors.Is(err, ErrFrameTooLarge) {
			// Nothing was written: tell the caller instead of hanging it up.
			resp = envelope{Status: statusError, Err: fmt.Sprintf("response to kind %d: %v", req.Kind, err)}
			err = writeFrame(st, &resp, t.opts.MaxFrameSize)
		}
		if err != nil {
			t.logger.Debug("transport: write response failed", "peer", from, "error", err)
			return
		}
	}
}

// dispatch runs the handler for req and builds the response envelope.
func (t *Transport) dispatch(req *envelope, from string) envelope {
	t.handlersMu.RLock()
	h := t.handlers[req.Kind]
	t.handlersMu.RUnlock()
	if h == nil {
		return envelope{Status: statusUnknownKind, Err: fmt.Sprintf("no handler for request kind %d", req.Kind)}
	}
	if req.TimeoutNanos <= 0 {
		return envelope{Status: statusError, Err: "caller's deadline passed before the request arrived"}
	}
	ctx, cancel := context.WithTimeout(t.baseCtx, time.Duration(req.TimeoutNanos))
	defer cancel()
	body, err := t.runHandler(ctx, h, req.Kind, from, req.Body)
	if err != nil {
		return envelope{Status: statusError, Err: err.Error()}
	}
	return envelope{Status: statusOK, Body: body}
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
