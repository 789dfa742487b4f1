"""WeChat Shop protocol pieces shared by order_ingest (receiving) and the stand-in in sim/ (sending)."""
