"""Outside meta-learning code on the benchmark: torchmeta- and learn2learn-shaped datasets over the prepared
data and versioned class splits (`benchmark.compat.torchmeta`, `benchmark.compat.learn2learn`), a protocol's
fixed test episodes in torchmeta's batch format (`protocol_episodes`), and records of kind "external" from the
predictions outside code makes on them (`external_record`, `write_external_record`)."""

from .episodes import ProtocolEpisodes, protocol_episodes
from .external import external_record, write_external_record
from .splits import CompatError

__all__ = ["CompatError", "ProtocolEpisodes", "external_record", "protocol_episodes", "write_external_record"]
