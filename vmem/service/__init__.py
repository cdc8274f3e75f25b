"""Running vmem: Vmem.open (the actors in this process) and Vmem.connect (a deployment's), vmem serve and the compressor workers.

May import: everything, the actors included.
"""
