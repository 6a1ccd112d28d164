"""How the supervisor shows its workers' stats as one server's."""

from __future__ import annotations

from sipsilo.workers.supervisor import merge_stats


def test_counts_add_up_maxima_stay_maxima_shared_figures_count_once() -> None:
    a = {"msilo:stored_messages": 3, "store:max_batch": 5, "msilo:stored_rows": 7,
         "usrloc:registered_contacts": 2, "sip:rx_requests": 10}
    b = {"msilo:stored_messages": 4, "store:max_batch": 9, "msilo:stored_rows": 7,
         "usrloc:registered_contacts": 2, "sip:rx_requests": 1}
    out = merge_stats([a, b], dropped=3)
    assert out == {"msilo:stored_messages": 7, "store:max_batch": 9, "msilo:stored_rows": 7,
                   "usrloc:registered_contacts": 2, "sip:rx_requests": 11,
                   "server:workers": 2, "server:dropped_datagrams": 3}
