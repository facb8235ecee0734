// Every job event a channel receives, kept from before the push that starts the job: `ws` hands
// over all the frames of one read at once, so a `started` that came with the push's reply is
// dispatched before the code after `await push(...)` runs (handlers registered then miss it).
export function recorder(channel) {
  const events = [];
  let waiters = [];
  const kindsOf = (jobId) => [...new Set(events.filter(([, p]) => p.job_id === jobId).map(([e]) => e))];
  channel.onMessage = (event, payload) => {
    if (payload && payload.job_id) {
      events.push([event, payload]);
      waiters = waiters.filter((waiter) => !waiter(event, payload));
    }
    return payload;
  };
  return {
    // the job's first `event`; after `ms` an error that lists what the job did send (not a hang)
    next: (event, jobId, ms = 120000) => new Promise((resolve, reject) => {
      const seen = events.find(([e, p]) => e === event && p.job_id === jobId);
      if (seen) return resolve(seen[1]);
      const timer = setTimeout(() => reject(new Error(
        `no ${event} for job ${jobId} within ${ms} ms; it sent: ${JSON.stringify(kindsOf(jobId))}`)), ms);
      waiters.push((e, p) => e === event && p.job_id === jobId && (clearTimeout(timer), resolve(p), true));
    }),
    kinds: kindsOf,
  };
}
