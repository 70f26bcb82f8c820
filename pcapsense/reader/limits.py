"""Framing limits shared by the readers. libpcap and wiretap use the same numbers to reject damaged files."""

MAX_CAPLEN = 262_144  # libpcap's maximum snapshot length for every common DLT
MAX_BLOCK_LEN = 16 * 2**20  # libpcap's historical pcapng block cap: large comments fit, 4 GiB lengths do not
CHUNK_BYTES = 16 * 2**20  # how much is read per batch from a file
PIPE_CHUNK_BYTES = 1 * 2**20  # smaller batches on pipes so a live `tcpdump -w -` is analysed as it runs
