"""The WeChat Shop stand-in: a faithful fake of WeChat's open API and message pushes, for tests and
`make run`. `create_app()` builds the FastAPI app; `python -m sim.wechat` serves it."""
