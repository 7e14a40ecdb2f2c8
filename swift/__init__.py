"""swift: a collaborative downloader.

Machines on one fast LAN pool their separate, slower internet links: a file
is cut into byte ranges, each machine fetches some of them over its own link
and streams them back over the LAN, and the requester writes them straight
into the final file.
"""

__version__ = "0.1.0"
