// wsgateway patch: this file is not in upstream gnet.

//go:build darwin || dragonfly || freebsd || linux || netbsd || openbsd

package gnet

import (
	"github.com/panjf2000/gnet/v2/pkg/errors"
	"github.com/panjf2000/gnet/v2/pkg/queue"
)

// acceptFailed handles an accept(2) error that is not one of the harmless
// ones. Without an AcceptErrorHandler it keeps upstream's behaviour: the
// error leaves Polling and shuts the whole engine down. With one, the
// listener leaves the poller (it stays readable while connections wait, so
// a level-triggered listener would spin) until the handler calls resume,
// which adds it back on the same event loop: a connection that waited in
// the backlog makes it readable at once, edge- or level-triggered.
func (el *eventloop) acceptFailed(fd int, err error, edgeTriggered bool) error {
	h := el.engine.opts.AcceptErrorHandler
	ln := el.listeners[fd]
	if h == nil || ln == nil {
		el.getLogger().Errorf("Accept() failed due to error: %v", err)
		return errors.ErrAcceptSocket
	}
	if err := el.poller.Delete(fd); err != nil {
		el.getLogger().Errorf("failed to pause the listener fd=%d after an accept error: %v", fd, err)
		return errors.ErrAcceptSocket
	}
	pa := ln.pollAttachment
	h(ln.addr, err, func() {
		_ = el.poller.Trigger(queue.HighPriority, func(any) error {
			if el.engine.isShutdown() {
				return nil
			}
			if err := el.poller.AddRead(pa, edgeTriggered); err != nil {
				el.getLogger().Errorf("failed to resume the listener fd=%d: %v", fd, err)
			}
			return nil
		}, nil)
	})
	return nil
}
