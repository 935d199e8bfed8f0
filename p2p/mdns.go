package p2p

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
)

// MDNSService is the DNS-SD service name peers of the swarm announce
// themselves under on the local network: mwpeer's own, so that they find
// one another and not every libp2p node on the LAN (IPFS uses _p2p._udp).
const MDNSService = "_mwpeer._udp"

// mdnsDialTimeout bounds one connection attempt to a peer found on the LAN,
// and mdnsMaxDials the attempts at once (a LAN may hold many peers).
const (
	mdnsDialTimeout = 10 * time.Second
	mdnsMaxDials    = 8
)

// MDNS finds peers on the local network by multicast DNS (go-libp2p's
// p2p/discovery/mdns) and connects to them, so that two peers on one LAN
// join each other with no bootstrap address; the DHT and the gossip take
// over from there. Start it with StartMDNS and stop it with Close.
type MDNS struct {
	h   *Host
	svc mdns.Service
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	slots  chan struct{}

	mu      sync.Mutex
	dialing map[peer.ID]bool
	found   map[peer.ID]bool // logged once each
}

// StartMDNS announces h on the local network under service (MDNSService
// when empty) and connects to the peers it finds there.
func StartMDNS(h *Host, service string, log *slog.Logger) (*MDNS, error) {
	if service == "" {
		service = MDNSService
	}
	if log == nil {
		log = slog.Default()
	}
	m := &MDNS{h: h, log: log, slots: make(chan struct{}, mdnsMaxDials),
		dialing: map[peer.ID]bool{}, found: map[peer.ID]bool{}}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.svc = mdns.NewMdnsService(h.Host, service, m)
	if err := m.svc.Start(); err != nil {
		m.cancel()
		return nil, err
	}
	return m, nil
}

// HandlePeerFound connects to a peer mDNS found, in the background (it
// implements mdns.Notifee).
func (m *MDNS) HandlePeerFound(ai peer.AddrInfo) {
	if ai.ID == m.h.ID() || len(ai.Addrs) == 0 || m.h.Network().Connectedness(ai.ID) == network.Connected {
		return
	}
	m.mu.Lock()
	if m.ctx.Err() != nil || m.dialing[ai.ID] {
		m.mu.Unlock()
		return
	}
	m.dialing[ai.ID] = true
	first := !m.found[ai.ID]
	if first && len(m.found) < 4096 {
		m.found[ai.ID] = true
	}
	m.wg.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.wg.Done()
		defer func() {
			m.mu.Lock()
			delete(m.dialing, ai.ID)
			m.mu.Unlock()
		}()
		select {
		case m.slots <- struct{}{}:
			defer func() { <-m.slots }()
		case <-m.ctx.Done():
			return
		}
		ctx, cancel := context.WithTimeout(m.ctx, mdnsDialTimeout)
		defer cancel()
		if err := m.h.Connect(ctx, ai); err != nil {
			m.log.Debug("mdns: could not connect to a peer found on the LAN", "other", ai.ID.String(), "err", err)
			return
		}
		if first {
			m.log.Info("found a peer on the local network (mDNS)", "other", ai.ID.String())
		}
	}()
}

// Close stops announcing and browsing and waits for connection attempts.
func (m *MDNS) Close() error {
	m.mu.Lock()
	m.cancel()
	m.mu.Unlock()
	err := m.svc.Close()
	m.wg.Wait()
	return err
}
