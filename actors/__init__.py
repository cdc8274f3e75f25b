"""The actors: the only writers of the log.

Each actor validates the requests that reach it on its subjects, gathers
inputs (searches, block texts), calls the library's decisions (vmem.paging,
vmem.agent, vmem.assembly) and appends what they return through the one
:class:`~vmem.actors.writer.Writer`.  :mod:`.runtime` serves their routes on
a bus, :mod:`.hosting` builds the set a process hosts.
"""
